package blob

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// AzureConfig says where an Azure backend keeps its objects.
type AzureConfig struct {
	// ServiceURL is the Blob service endpoint, for example
	// "https://ACCOUNT.blob.core.windows.net/" or, for Azurite,
	// "http://127.0.0.1:10000/devstoreaccount1".
	ServiceURL string
	// AccountName and AccountKey authenticate with Shared Key.
	AccountName, AccountKey string
	// Container holds the objects; NewAzure creates it if missing.
	Container string
	// HTTPClient sends the requests; nil means the SDK's default.
	HTTPClient *http.Client
}

// azureBlockSize is the size of the blocks a Put stages. It is also the
// memory one Put holds. 4 MiB keeps that small while allowing objects of
// up to azureMaxBlocks blocks = 195 GiB.
const azureBlockSize = 4 << 20

// azureMaxBlocks is Azure's limit on the blocks of one committed blob.
const azureMaxBlocks = 50_000

// Azure is a Backend on one Azure Blob Storage container. Objects are
// block blobs named by their keys.
//
// Put reads its input in azureBlockSize chunks. An object that fits in one
// chunk is written with a single Put Blob request; a larger one is staged
// block by block and made visible by Put Block List. Staged blocks stay
// invisible until that commit, and Azure discards uncommitted blocks after
// a week, so an interrupted Put leaves nothing visible and the previous
// object intact.
type Azure struct {
	container *container.Client
	name      string
}

var _ Backend = (*Azure)(nil)

// NewAzure connects to the container in cfg, creating it if missing.
func NewAzure(ctx context.Context, cfg AzureConfig) (*Azure, error) {
	cred, err := azblob.NewSharedKeyCredential(cfg.AccountName, cfg.AccountKey)
	if err != nil {
		return nil, fmt.Errorf("azure blob store: account credentials: %w", err)
	}
	var opts azblob.ClientOptions
	if cfg.HTTPClient != nil {
		opts.ClientOptions = azcore.ClientOptions{Transport: cfg.HTTPClient}
	}
	client, err := azblob.NewClientWithSharedKeyCredential(cfg.ServiceURL, cred, &opts)
	if err != nil {
		return nil, fmt.Errorf("azure blob store %s: %w", cfg.ServiceURL, err)
	}
	c := client.ServiceClient().NewContainerClient(cfg.Container)
	if _, err := c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil, fmt.Errorf("azure blob store: create container %q: %w", cfg.Container, err)
	}
	return &Azure{container: c, name: cfg.Container}, nil
}

var blockBufs = sync.Pool{New: func() any { b := make([]byte, azureBlockSize); return &b }}

// Put implements Backend.
func (a *Azure) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := ValidateKey(key); err != nil {
		return 0, err
	}
	bb := a.container.NewBlockBlobClient(key)
	bufp := blockBufs.Get().(*[]byte)
	defer blockBufs.Put(bufp)
	buf := *bufp

	n, err := readFull(ctx, r, buf)
	if err != nil && err != io.EOF {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	if n < len(buf) {
		// The whole object is in buf: one atomic Put Blob.
		_, err := bb.Upload(ctx, body(buf[:n]), &blockblob.UploadOptions{
			TransactionalValidation: md5Of(buf[:n]),
		})
		if err != nil {
			return 0, fmt.Errorf("put %q: upload: %w", key, err)
		}
		return int64(n), nil
	}

	// Block IDs must be unique to this Put: a concurrent Put to the same key
	// stages into the same uncommitted list, and must not commit our blocks
	// (nor we its). 16 random bytes then the block index; Azure wants all
	// IDs of a blob to have the same length.
	var id [24]byte
	if _, err := rand.Read(id[:16]); err != nil {
		return 0, fmt.Errorf("put %q: block id: %w", key, err)
	}
	var ids []string
	var total int64
	for n > 0 {
		if len(ids) == azureMaxBlocks {
			return 0, fmt.Errorf("put %q: object exceeds %d blocks of %d bytes, Azure's limit per blob", key, azureMaxBlocks, azureBlockSize)
		}
		binary.BigEndian.PutUint64(id[16:], uint64(len(ids)))
		bid := base64.StdEncoding.EncodeToString(id[:])
		_, err := bb.StageBlock(ctx, bid, body(buf[:n]), &blockblob.StageBlockOptions{
			TransactionalValidation: md5Of(buf[:n]),
		})
		if err != nil {
			return 0, fmt.Errorf("put %q: stage block %d: %w", key, len(ids), err)
		}
		ids = append(ids, bid)
		total += int64(n)
		n, err = readFull(ctx, r, buf)
		if err != nil && err != io.EOF {
			return 0, fmt.Errorf("put %q: %w", key, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put %q: %w", key, err)
	}
	if _, err := bb.CommitBlockList(ctx, ids, nil); err != nil {
		return 0, fmt.Errorf("put %q: commit %d blocks: %w", key, len(ids), err)
	}
	return total, nil
}

func body(b []byte) io.ReadSeekCloser { return streaming.NopCloser(bytes.NewReader(b)) }

// md5Of has Azure check each request body against its MD5, so that data
// damaged in transit is refused rather than stored.
func md5Of(b []byte) blob.TransferValidationType {
	sum := md5.Sum(b)
	return blob.TransferValidationTypeMD5(sum[:])
}

// azureGetRetries is how often Get resumes a download whose connection
// broke. Resumed reads are pinned to the blob's ETag, so an object
// overwritten meanwhile fails the read instead of mixing two versions.
const azureGetRetries = 3

// Get implements Backend.
func (a *Azure) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := ValidateKey(key); err != nil {
		return nil, 0, err
	}
	resp, err := a.container.NewBlobClient(key).DownloadStream(ctx, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("get %q: %w", key, azureNotFound(err))
	}
	var size int64
	if resp.ContentLength != nil {
		size = *resp.ContentLength
	}
	return resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: azureGetRetries}), size, nil
}

// Delete implements Backend.
func (a *Azure) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, err := a.container.NewBlobClient(key).Delete(ctx, nil); err != nil {
		return fmt.Errorf("delete %q: %w", key, azureNotFound(err))
	}
	return nil
}

// List implements Backend.
func (a *Azure) List(ctx context.Context, prefix string) ([]Object, error) {
	opts := &container.ListBlobsFlatOptions{}
	if prefix != "" {
		opts.Prefix = &prefix
	}
	objs := []Object{}
	pager := a.container.NewListBlobsFlatPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %q in container %q: %w", prefix, a.name, err)
		}
		for _, item := range page.Segment.BlobItems {
			if item.Name == nil {
				continue
			}
			o := Object{Key: *item.Name}
			if p := item.Properties; p != nil {
				if p.ContentLength != nil {
					o.Size = *p.ContentLength
				}
				if p.LastModified != nil {
					o.Modified = *p.LastModified
				}
			}
			objs = append(objs, o)
		}
	}
	// Azure lists in name order already; sorting here makes the contract
	// hold whatever the service (or emulator) does.
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	return objs, nil
}

func azureNotFound(err error) error {
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusNotFound && re.ErrorCode == "" {
		// HEAD-less 404s can arrive without an error code.
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
