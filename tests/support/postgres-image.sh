#!/usr/bin/env bash
# The PostgreSQL 15 test image: server-image.sh's postgres recipe, under the
# name the tests and docs have always used.
#   tests/support/postgres-image.sh NAME:TAG | --selftest
exec "$(dirname "$0")/server-image.sh" postgres "$@"
