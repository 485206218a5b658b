<?php
// opsctl lab application: liveness, naming the host and the worker that answered.
header('Content-Type: text/plain');
echo "ok ", gethostname(), " pid=", getmypid(), "\n";
