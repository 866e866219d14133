module github.com/zcnet/zcnet

go 1.24

require (
	github.com/valyala/bytebufferpool v1.0.0
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.43.0
	golang.org/x/sys v0.35.0
)
