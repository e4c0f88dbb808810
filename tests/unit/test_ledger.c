/* placeholder: being written this session; fails until then */
int main(void) { return 1; }
