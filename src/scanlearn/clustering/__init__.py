"""The clustering maths a run's stages and commands share: k-means on the mined features and cluster-size priors,
SCAN heads on features in memory and their scores, the label-free choice among a run's clusterings, and the run's
one answer (``answer.run_probabilities``)."""
