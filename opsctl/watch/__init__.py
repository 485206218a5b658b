"""opsctl watch: a live view of the fleet (sampler.sh on the hosts, sessions, figures, view)."""
