"""The copy check that confirms or vetoes near-duplicate candidates: images prepared once (320 px gray,
SIFT keypoints, ink mask) and cached per run, RootSIFT + RANSAC alignment, block-wise pixel
agreement and tone, the inside search and the keypoint-free evidence. Used by dedup/ and
contamination.
"""
