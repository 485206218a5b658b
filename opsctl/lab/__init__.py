"""A local fleet of real hosts (sshd, nginx, php-fpm) in Linux namespaces, for tests and demos."""
