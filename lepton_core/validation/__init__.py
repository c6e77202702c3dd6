"""Data validation gates with Great Expectations: manifests of image folders, suites built from
the spec, and gates that fail the run when the data is not what the spec says."""
