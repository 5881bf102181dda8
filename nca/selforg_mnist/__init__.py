"""The self-classifying MNIST CA (Randazzo et al., Distill 2020): model, fast rollouts, losses,
training, evaluation, rendering, robustness, the published weights and the shipped models."""
