"""DPO on the labels' partial orders: the loss (`loss`) and the batches the learners read (`batch`)."""
