"""Fakes of the outside world that hubgate talks to (the upstream Hub and its CDN), served over loopback."""
