"""Pipelines that chain the stages: demo, teacher -> CAMs -> PixelCAM, robustness studies."""
