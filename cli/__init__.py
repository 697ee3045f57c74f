"""The ``nba`` command line (:mod:`cli.main`): it runs the library, the simulator, the MLflow jobs of
:mod:`training` and the decision service of :mod:`serving`; none of them imports it."""
