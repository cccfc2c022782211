/* Harness of the README's token snippet: a channel `ch` with one int
 * waiting in it, received into `item`. */
#include <cpattern.h>

int main(void)
{
	struct cpat_chan *ch;
	int item = 7;
	if (cpat_chan_create(&ch, sizeof item, 1) != 0 ||
	    cpat_chan_send(ch, &item, NULL) != 0)
		return 1;
	item = 0;
	/* @SNIPPET@ */
	cpat_chan_destroy(ch);
	return rc == 0 && item == 7 ? 0 : 1;
}
