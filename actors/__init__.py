"""Ray actor classes that wrap the core (`hrlaif_ray`): rollout, reward service, learners, labeler pool."""
