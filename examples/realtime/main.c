/*
 * realtime_processor: a consumer-group member on a Redis stream that parses
 * JSON messages, computes, and saves them in batches into SQLite,
 * acknowledging each message only after its batch committed; and, with
 * --produce, the producer that feeds it at an offered rate. See
 * processor.c for what it does and guarantees, --help for its flags.
 */
#include "rt.h"

int main(int argc, char **argv)
{
	return rt_main(argc, argv);
}
