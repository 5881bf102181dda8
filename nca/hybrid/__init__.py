"""Hybrid CA + neural gate restorer of 70 %-masked MNIST digits, its CA-only and CNN-autoencoder
baselines, and the frozen digit-ID classifier that scores them (issue 8; docs/hybrid/README.md)."""
