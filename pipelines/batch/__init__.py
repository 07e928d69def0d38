"""The batch job (`matting run`): planning, the Ray Data chain, its stages, the GPU path, incremental state.

Light on purpose: importing `pipelines.batch.state` (bundle, report) does not import Ray.
"""
