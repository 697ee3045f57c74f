"""nba: next-best-action for omnichannel marketing (whether to contact a customer, where, with what, when).

The library the simulator (``envs``), the jobs (``training``) and the service (``serving``) share; it
imports none of them, nor MLflow or BentoML. Its modules: :mod:`nba.actions` (the action space),
:mod:`nba.features` (what a policy sees), :mod:`nba.eligibility` (the contact policy),
:mod:`nba.deployment` (a brand's world, declared once), :mod:`nba.catalogue` (offers' features),
:mod:`nba.decide` (one decision path), :mod:`nba.policies` (the policies), :mod:`nba.log` (the decision
log), :mod:`nba.ope` (off-policy evaluation), :mod:`nba.ab` (A/B tests) and :mod:`nba.serialization`
(saving policies and bundles without pickle).
"""
