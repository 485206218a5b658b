"""opsctl: keep nginx + php-fpm fleets alive under sudden traffic."""

__version__ = "0.1.0"
