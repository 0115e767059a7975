"""The HTTP API of the job system (DRF): job status, retry and cancel (jobs), live output and events
(output, output_watch, stream_limits), the rails every job-submitting endpoint of any app uses (submit),
rate limits (throttling) and the health probes (health). Views adapt input and call services/selectors.
"""
