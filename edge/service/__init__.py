"""Running as a service: logging, systemd notification and watchdog, metrics, memory tuning."""
