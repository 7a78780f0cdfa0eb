"""Design-space exploration: width/depth variants, the accuracy-vs-operations hyperbola, energy frontiers."""
