"""Caption strategies against memorization (MC/RC/RT/CWR/RNA, deterministic by seed, key and epoch) and
the Gaussian-noise text-encoder hook.
"""
