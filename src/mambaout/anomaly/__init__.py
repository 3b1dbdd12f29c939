"""Anomaly detection on continuous video: the built-in conveyor line (`line`) and the field's metrics (`metrics`)."""
