"""The project's one analysis layer, generic over points: fits, frontiers, figure style and report writing."""
