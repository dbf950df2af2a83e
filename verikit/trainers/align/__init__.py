"""Training without backpropagation: the Align rules of Boopathy & Fiete (arXiv:2106.08453) and their
baselines on NTK-parameterised conv nets and a ReLU RNN, with the alignment score (seed-papers.md 6)."""
