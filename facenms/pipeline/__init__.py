"""From a dataset to its core set: runtime (what the stages share), proxy
(training the proxy model), embedders (loading face models), extract
(features, resumable), export (the core set as RecordIO, .lst or folders),
report (plots), cleaning (the label-issues CSV), run (every stage from one config)."""
