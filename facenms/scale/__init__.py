"""Selection larger than memory and over several processes.

reader (rows of a file read into RAM), blocks (the streamed selection: a
Runner over blocks of identities), dist (process groups), sort_features
(a feature file rewritten in identity order), cleaning (label issues, streamed).
"""
