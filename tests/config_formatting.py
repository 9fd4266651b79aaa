"""In the test processes, mmengine's ``Config`` formats its text once for each content.

mmengine's Runner asks for ``Config.pretty_text`` (the whole config formatted by yapf) when it
logs the config, dumps it, records it in the runtime info and saves each checkpoint: five
times before the first training step, each 0.3 to 0.8 s for the configs the tests train,
where a whole tiny test run takes a few seconds. The text is the same as long as the config
is, so here it is kept and reused until the config changes. Over the test files that build
Runners in their process, this cuts the formatting from 88 calls to 22 and the CPU time of
those files from about 155 s to 109 s. Runs of a tool in a new interpreter format as mmengine
does.
"""
_mmengine_pretty_text = None  # mmengine's own Config.pretty_text, once replaced


def mmengine_pretty_text(cfg):
    """``cfg``'s text as mmengine formats it (the formatting is done again)."""
    return _mmengine_pretty_text.fget(cfg)


def _pretty_text_once(self):
    content = repr(self._cfg_dict)
    kept = self.__dict__.get('_formatted_text')
    if kept is None or kept[0] != content:
        kept = (content, mmengine_pretty_text(self))
        # Config.__setattr__ would store it as a config key
        object.__setattr__(self, '_formatted_text', kept)
    return kept[1]


def format_configs_once():
    """Every ``Config`` of this process keeps its formatted text while its content is the
    same (a deep copy keeps it too). Nothing happens where mmengine cannot be imported;
    calling it again changes nothing."""
    global _mmengine_pretty_text
    try:
        from mmengine.config import Config
    except ImportError:
        return
    if _mmengine_pretty_text is None:
        _mmengine_pretty_text = Config.pretty_text
        Config.pretty_text = property(_pretty_text_once, doc=_mmengine_pretty_text.__doc__)
