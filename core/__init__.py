"""Inpaint Studio's core: images, masks, models and edits, with no user interface.

Nothing here imports streamlit, and heavy libraries (torch, diffusers, transformers, ultralytics)
are imported inside the functions that need them, so ``import core`` stays fast.
"""
