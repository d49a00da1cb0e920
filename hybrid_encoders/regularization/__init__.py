"""Zipformer's training-only machinery: schedules, gradient balancers, whitening and random skipping.

Nothing here has parameters or changes a forward value; every module returns its input unchanged in eval mode
(and when no gradient is needed), so an inference model pays nothing for it.
"""
