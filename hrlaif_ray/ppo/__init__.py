"""PPO maths (pure tensor functions), experience assembly and the controller's config; no Ray here."""
