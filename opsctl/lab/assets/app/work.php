<?php
// opsctl lab application: a request with a configurable service time (?ms=, default 100).
$ms = isset($_GET['ms']) ? max(0, min(600000, (int)$_GET['ms'])) : 100;
usleep($ms * 1000);
header('Content-Type: text/plain');
echo "done ", $ms, "ms ", gethostname(), "\n";
