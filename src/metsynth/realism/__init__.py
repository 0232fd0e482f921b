"""Realism of generated lesions: features, classifier two-sample tests, the start-timestep sweep."""
