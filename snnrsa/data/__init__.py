"""Data: procedural training images, a synthetic THINGS-fMRI-format brain set, and its reader."""
