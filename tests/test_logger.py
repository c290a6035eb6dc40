import logging

from retdet.utils.logger import format_table, log_table, setup_logger


def test_logger_writes_file_per_rank(tmp_path, capsys):
    main = setup_logger(str(tmp_path), name="retdet.test0", rank=0, color=False)
    main.info("hello from rank 0")
    other = setup_logger(str(tmp_path / "r1"), name="retdet.test1", rank=1, color=False)
    other.info("quiet on console")
    other.warning("loud on console")
    for h in main.handlers + other.handlers:
        h.flush()
    out = capsys.readouterr().out
    assert "hello from rank 0" in out and "loud on console" in out and "quiet on console" not in out
    assert "hello from rank 0" in (tmp_path / "log.txt").read_text()
    assert "quiet on console" in (tmp_path / "r1" / "log.txt.rank1").read_text()


def test_color_and_tables(tmp_path, capsys):
    logger = setup_logger(None, name="retdet.test_color", rank=0, color=True)
    logger.warning("careful")
    assert "\x1b[" in capsys.readouterr().out  # ANSI colour codes
    text = format_table([("a", 1.5), ("bb", 2.25)], headers=["name", "value"])
    assert text.splitlines()[0].startswith("| name") and "2.250" in text
    logger2 = setup_logger(None, name="retdet.test_table", rank=0, color=False)
    log_table([("x", 1)], ["k", "v"], title="Title", logger=logger2)
    assert "Title" in capsys.readouterr().out
    assert logging.getLogger("retdet.test_table") is logger2
