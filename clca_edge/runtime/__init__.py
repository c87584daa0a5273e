"""Device runtime: bundle loading and checks, preprocessing, inference backends. Never imports torch."""
