"""Where pipelines run: compile and submit to KFP, cluster placement profiles, Kubeflow TrainJobs, the local runner."""
