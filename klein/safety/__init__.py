"""Safety: the prompt term list, the tolerance policy and Moderator, and the NudeNet image detector."""
