from typing_extensions import Buffer

def transpose(src: Buffer, dst: Buffer, planes: int, plane_stride: int, pixels: int, dst_stride: int,
              dst_offset: int, /) -> int: ...
