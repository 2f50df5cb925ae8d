"""Measuring artifacts: speed (bench), accuracy on labelled data (eval), the cost model (flops), the recommendation."""
