"""The paper's math over depth, no I/O: prior, posterior, ELBO, likelihoods, metrics, pruning."""
