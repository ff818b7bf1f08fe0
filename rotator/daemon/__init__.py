"""`rotator run`: schedules, due revocations, the HTTP server, leadership and notifications."""
