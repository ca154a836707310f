"""podvisor's PID-1 program: config schema, cloud detection, bootstrap and the supervisord config."""
