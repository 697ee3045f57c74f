"""The decision log: one schema written by the simulator, the service and the importer."""

from nba.log.importer import ColumnMapping, import_table
from nba.log.parquet import parquet_schema, read_parquet_batches, read_parquet_layout
from nba.log.records import (
    EVENTS,
    FUNNEL,
    ContactHistory,
    DecisionRecords,
    FunnelEvents,
    LoggedBatch,
    LogLayout,
    OutcomeRecords,
)
from nba.log.rewards import RewardRule, join_rewards
from nba.log.store import DecisionLog
from nba.log.validation import validate_decisions, validate_outcomes

__all__ = [
    "EVENTS",
    "FUNNEL",
    "ColumnMapping",
    "ContactHistory",
    "DecisionLog",
    "DecisionRecords",
    "FunnelEvents",
    "LogLayout",
    "LoggedBatch",
    "OutcomeRecords",
    "RewardRule",
    "import_table",
    "join_rewards",
    "parquet_schema",
    "read_parquet_batches",
    "read_parquet_layout",
    "validate_decisions",
    "validate_outcomes",
]
