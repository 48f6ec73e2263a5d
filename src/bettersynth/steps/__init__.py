"""What each pipeline step does, as plain functions over local paths.

Why: KFP components stay thin (parse artifacts, call one function here), so
every step is testable and runnable without KFP, and the same code serves the
local quickstart and the cluster.
"""
