"""Background tracking stage: CoTracker points outside the person, camera motion, background plate."""
