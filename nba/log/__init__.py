"""The decision log: one schema written by the simulator, the service and the importer."""

from nba.log.records import EVENTS, DecisionRecords, LoggedBatch, OutcomeRecords, RewardRule

__all__ = ["EVENTS", "DecisionRecords", "LoggedBatch", "OutcomeRecords", "RewardRule"]
