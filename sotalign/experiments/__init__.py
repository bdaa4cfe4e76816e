"""The experiment harness: ``experiment`` (``Experiment``, ``DataSpec`` and ``load_data``: an experiment's
budget drawn from the bundled, synthetic or an embedded dataset, with its evaluation), ``bundled`` (the
OpenMoji + digits views the demo scores), ``synthetic_comparison`` (the methods on the synthetic
benchmark), ``results`` and ``paper_results`` (tables), ``distances`` (spherical sliced Wasserstein) and
``retrieval_cases`` (the gallery's seeded queries and what a model retrieves for them).
"""
