"""Device drivers: a sans-I/O protocol core, a real transport and a simulator each."""
