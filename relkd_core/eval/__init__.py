"""Evaluation of distilled students: zero-shot, few-shot, out-of-distribution, structural gap.

Segmentation metrics live one layer lower, in :mod:`relkd_core.metrics`, because the teachers'
own zero-shot measurement uses them too.
"""
