"""The autoscaler: policies from labels and files, the pure scaling decision, and the daemon around them."""
