"""Test support: real servers on loopback (OpenBao, moto) and the destination harnesses."""
