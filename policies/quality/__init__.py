"""Quality-aware routing: the difficulty score (trained, shipped, scored offline) and its evaluation."""
