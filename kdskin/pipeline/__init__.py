"""The training pipeline of ``kdskin run``: data of a run, training stages, the whole run.

- :mod:`kdskin.pipeline.data` -- :class:`RunData`: split, decoded arrays and class balance
- :mod:`kdskin.pipeline.stages` -- train and record one model (baseline CNN, teacher, student)
- :mod:`kdskin.pipeline.run` -- :func:`run_pipeline` and the export / bench / explain stages

Submodules import TensorFlow lazily; import them directly.
"""
