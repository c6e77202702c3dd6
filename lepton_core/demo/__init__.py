"""The bundled demo: a small but real migration built from scikit-learn's handwritten digits."""
